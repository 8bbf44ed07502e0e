"""voxfleet: a self-hosted production platform for Pipecat voice agents."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

"""KFP components: thin wrappers around `vidssl.stages.<name>.run` (the logic lives there).

Every component runs in one image, set by VIDSSL_IMAGE at compile time. Each body imports
vidssl itself because KFP ships only the function's source into the container.
"""

import os

from vidssl import __version__

#: The one setting for the image every component runs in.
IMAGE = os.environ.get("VIDSSL_IMAGE", f"ghcr.io/vidssl/vidssl-python:{__version__}")

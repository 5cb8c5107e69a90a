"""KFP components: thin wrappers around `vidssl.stages.<name>.run` (the logic lives there).

Every component runs in one image, set by VIDSSL_IMAGE at compile time; a task that asks for
GPUs runs its GPU variant, VIDSSL_IMAGE_GPU (pipelines/cluster.py sets it per task). Each body
imports vidssl itself because KFP ships only the function's source into the container.
"""

import os

from vidssl import __version__

#: The one setting for the image every component runs in (the CPU variant).
IMAGE = os.environ.get("VIDSSL_IMAGE", f"ghcr.io/vidssl/vidssl-python:{__version__}")
#: The suffix of the GPU variant's tag (the chart's image.gpuTagSuffix default).
GPU_TAG_SUFFIX = "-gpu"


def _gpu_variant(image: str) -> str | None:
    """`repo:tag` -> `repo:tag-gpu`. None for an image pinned by digest (`repo@sha256:...`), whose
    GPU variant's digest cannot be derived, and for one without a tag: such an image needs
    VIDSSL_IMAGE_GPU, rather than GPU tasks silently running the CPU build of torch."""
    if "@" in image or ":" not in image.rsplit("/", 1)[-1]:
        return None
    return f"{image}{GPU_TAG_SUFFIX}"


#: The image of the tasks that ask for GPUs; None when VIDSSL_IMAGE_GPU is unset and IMAGE has
#: no tag to derive it from (compiling a pipeline with a GPU task then fails, naming both).
IMAGE_GPU = os.environ.get("VIDSSL_IMAGE_GPU") or _gpu_variant(IMAGE)

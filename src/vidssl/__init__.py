"""vidssl: self-supervised learning of image representations from video, as Kubeflow Pipelines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vidssl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

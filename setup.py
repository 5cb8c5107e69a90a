"""Build hook: compile Objectron's .proto files (src/vidssl/objectron/schema) with grpcio-tools,
so `pip install .` and `pip install -e .` both produce the *_pb2.py modules. Everything else
about the package is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE_ROOT = Path(__file__).resolve().parent / "src"
SCHEMA_DIR = SOURCE_ROOT / "vidssl" / "objectron" / "schema"


def compile_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    for proto in sorted(SCHEMA_DIR.glob("*.proto")):
        arguments = [
            "protoc",
            f"-I{SOURCE_ROOT}",
            f"-I{well_known}",
            f"--python_out={SOURCE_ROOT}",
            str(proto.relative_to(SOURCE_ROOT)),
        ]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"protoc failed on {proto}")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        compile_protos()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})

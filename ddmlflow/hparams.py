"""Using a search's result: tuned values per network, applied to a configuration with their provenance.

``full -P hparams=<tune run id | best_hparams.json>`` trains each network with
its own tuned values. A local net without values of its own takes the global
net's (KLW's own procedure: the global optimum used for the locals).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path

from .errors import InputError, require
from .tags import HPARAMS_NETWORK_TAG, HPARAMS_SOURCE_TAG, HPARAMS_TAG
from .tracking import get_run, work_dir

_NETWORK = re.compile(r"^(global|coarse|local/\d+)$")
# best_hparams.json name -> RunConfig field, per kind of network.
FIELDS = {
    "cnn": {
        "batch_size": "batch_size",
        "learning_rate": "learning_rate",
        "optimizer": "optimizer",
        "dropout": "dropout",
    },
    "coarse": {
        "batch_size": "coarse_batch_size",
        "learning_rate": "coarse_learning_rate",
        "optimizer": "optimizer",
        "dropout": "coarse_dropout",
        "hidden": "coarse_hidden",
    },
}


class Hparams(dict):
    """``{"global": {...}, "local/00": {...}, "coarse": {...}}`` plus where it came from (``source``)."""

    source: str = ""


def load_hparams(source: str) -> Hparams:
    """Per-network values from a tune run id or a best_hparams.json path."""
    source = str(source).strip()
    allowed = "a tune run id or a best_hparams.json file"
    if source.endswith(".json") or Path(source).is_file():
        require(Path(source).is_file(), "hparams", source, f"{allowed} (file not found)")
        text = Path(source).read_text()
    else:
        import mlflow

        get_run(source, "hparams")
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=source, artifact_path="best_hparams.json", dst_path=tempfile.mkdtemp(dir=work_dir("tmp"))
            )
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise InputError("hparams", source, f"{allowed} (that run logged no best_hparams.json)") from None
        text = Path(path).read_text()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError("hparams", source, f"{allowed} (invalid JSON: {e})") from None
    require(isinstance(raw, dict) and bool(raw), "hparams", source, f"{allowed} (no networks in it)")
    for net, values in raw.items():
        require(
            bool(_NETWORK.match(net)) and isinstance(values, dict),
            "hparams",
            source,
            f"{allowed} (bad entry {net!r}: expected global, coarse or local/NN mapping to values)",
        )
        kind = "coarse" if net == "coarse" else "cnn"
        unknown = set(values) - set(FIELDS[kind])
        require(not unknown, "hparams", source, f"{allowed} ({net}: unknown names {sorted(unknown)})")
    out = Hparams(raw)
    out.source = source
    return out


def apply_hparams(cfg, hparams: dict, network: str):
    """(cfg with ``network``'s tuned values, provenance tags). ``network``: global | local/NN | coarse."""
    require(bool(_NETWORK.match(network)), "network", network, "global, coarse or local/NN")
    used = (
        network if network in hparams else ("global" if network.startswith("local/") and "global" in hparams else None)
    )
    if used is None:
        return cfg, {}
    kind = "coarse" if network == "coarse" else "cnn"
    changes = {}
    for name, value in hparams[used].items():
        changes[FIELDS[kind][name]] = tuple(int(u) for u in value) if name == "hidden" else value
    tags = {
        HPARAMS_SOURCE_TAG: getattr(hparams, "source", "") or "<dict>",
        HPARAMS_NETWORK_TAG: used,
        HPARAMS_TAG: json.dumps(hparams[used], sort_keys=True),
    }
    return dataclasses.replace(cfg, **changes), tags

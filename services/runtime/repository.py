"""Model repository reader: finds models and versions, reads ``metadata.json``
(validated by ``services.contract.metadata``) and checks the sha256 of ``model.onnx``.

Layout: ``{root}/{model}/{version}/model.onnx`` and ``metadata.json``. Every refusal
raises ``ModelRepositoryError`` with a message that names the file and the problem.
``RepositoryScan`` tells complete versions from half-written ones, for a poll.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from services.contract.errors import ModelRepositoryError
from services.contract.metadata import MODEL_NAME, VERSION, ModelMetadata, parse_metadata


@dataclass(frozen=True)
class ModelFiles:
    """A validated model version: its metadata and the bytes of its ONNX file."""

    metadata: ModelMetadata
    directory: Path
    onnx_path: Path
    onnx_bytes: bytes


class ModelRepository:
    """Read-only view of a model repository folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def models(self) -> list[str]:
        """Model names present (folders with a valid name), sorted."""
        if not self.root.is_dir():
            raise ModelRepositoryError(f"{self.root}: model repository folder does not exist")
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.match(p.name)
        )

    def versions(self, model: str) -> list[int]:
        """Versions of ``model`` present, ascending."""
        folder = self.root / model
        if not MODEL_NAME.match(model) or not folder.is_dir():
            raise ModelRepositoryError(f"{folder}: no such model in the repository")
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and VERSION.match(p.name))

    def resolve(self, model: str, version: int | None = None) -> Path:
        """Folder of ``model`` at ``version`` (None = latest, the highest present)."""
        versions = self.versions(model)
        if version is None:
            if not versions:
                raise ModelRepositoryError(f"{self.root / model}: model has no versions")
            version = versions[-1]
        folder = self.root / model / str(version)
        if version not in versions:
            raise ModelRepositoryError(f"{folder}: no such model version")
        return folder

    def load(self, model: str, version: int | None = None) -> ModelFiles:
        """Resolve, read and validate a model version (metadata + sha256)."""
        return load_model_dir(self.resolve(model, version))


def load_model_dir(directory: Path) -> ModelFiles:
    """Read ``directory``'s metadata.json and model.onnx and check them against each other."""
    metadata_path = directory / "metadata.json"
    onnx_path = directory / "model.onnx"
    if not metadata_path.is_file():
        raise ModelRepositoryError(f"{metadata_path}: missing (every model version needs one)")
    if not onnx_path.is_file():
        raise ModelRepositoryError(f"{onnx_path}: missing (every model version needs one)")
    try:
        document = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelRepositoryError(f"{metadata_path}: not readable JSON ({exc})") from None
    metadata = parse_metadata(document, metadata_path)
    if metadata.name != directory.parent.name:
        raise ModelRepositoryError(
            f"{metadata_path}: name {metadata.name!r} differs from its folder "
            f"{directory.parent.name!r}"
        )
    if str(metadata.version) != directory.name:
        raise ModelRepositoryError(
            f"{metadata_path}: version {metadata.version} differs from its folder "
            f"{directory.name!r}"
        )
    onnx_bytes = onnx_path.read_bytes()
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if digest != metadata.sha256:
        raise ModelRepositoryError(
            f"{onnx_path}: sha256 mismatch: file is {digest}, {metadata_path.name} says "
            f"{metadata.sha256}; refusing to load a model that differs from its metadata"
        )
    return ModelFiles(
        metadata=metadata, directory=directory, onnx_path=onnx_path, onnx_bytes=onnx_bytes
    )


Stamp = tuple[tuple[int, int], tuple[int, int]]
"""(mtime_ns, size) of a version's metadata.json and model.onnx."""


def _stamp(directory: Path) -> Stamp | None:
    try:
        meta, onnx = (directory / "metadata.json").stat(), (directory / "model.onnx").stat()
    except OSError:
        return None
    return (meta.st_mtime_ns, meta.st_size), (onnx.st_mtime_ns, onnx.st_size)


@dataclass
class RepositoryScan:
    """Which versions of a model are complete: both files present, the metadata valid
    and the ONNX file's sha256 the one it names (``load_model_dir``). A version is
    checked again only when one of its files changed (mtime or size), so a poll of an
    unchanged repository reads no model file."""

    root: Path
    _checked: dict[Path, tuple[Stamp, str]] = field(default_factory=dict)
    """version folder → the stamp it was checked at and the problem ("" = complete)."""

    def versions(self, model: str) -> tuple[list[int], dict[int, str]]:
        """The complete versions of ``model`` (ascending) and the incomplete ones with
        what is wrong; ``([], {})`` when the model is not in the repository."""
        try:
            present = ModelRepository(self.root).versions(model)
        except ModelRepositoryError:
            return [], {}
        complete, incomplete = [], {}
        for version in present:
            problem = self.problem(self.root / model / str(version))
            if problem:
                incomplete[version] = problem
            else:
                complete.append(version)
        return complete, incomplete

    def problem(self, directory: Path) -> str:
        """What keeps ``directory`` from being a complete model version ("" if nothing)."""
        stamp = _stamp(directory)
        if stamp is None:
            missing = [n for n in ("metadata.json", "model.onnx") if not (directory / n).is_file()]
            return f"{directory}: {' and '.join(missing) or 'files'} missing"
        cached = self._checked.get(directory)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            load_model_dir(directory)
            problem = ""
        except ModelRepositoryError as exc:
            problem = str(exc)
        except OSError as exc:  # removed or rewritten while being read
            problem = f"{directory}: {exc}"
        self._checked[directory] = (stamp, problem)
        return problem

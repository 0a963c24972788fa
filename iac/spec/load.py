"""load → validate → resolve: model.yaml to a `ResolvedSpec`, collecting every problem at once.

Each problem carries the line it is on (from the YAML node tree), so a user reads
`model.yaml:12: optimize.quantization: "int4" is not supported; use one of none, ...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from iac.spec.deploy_errors import foreign_setting, moved_settings, unknown_target, untagged
from iac.spec.errors import Problem, UserError
from iac.spec.models import DEPLOY_SECTIONS, DockerDeploy, Locations, ModelFormat, ModelSpec, ResolvedSpec

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecDocument:
    """The parsed YAML and where each field was written."""

    path: Path
    data: Any
    lines: dict[Loc, int]

    @property
    def locations(self) -> Locations:
        return Locations(file=self.path.name, lines={".".join(map(str, loc)): line for loc, line in self.lines.items()})

    def where(self, loc: Loc) -> str:
        """file:line of the deepest part of `loc` that exists in the file."""
        return self.locations.where(".".join(map(str, loc)))


def load(path: str | Path) -> SpecDocument:
    """Read and parse model.yaml. Syntax errors are reported with their line."""
    path = Path(path)
    if not path.is_file():
        raise UserError.single(str(path), "", "no such spec file", "pass the path to a model.yaml")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError.single(f"{path.name}:{line}", "", f"invalid YAML: {problem}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise UserError.single(
            f"{path.name}:1", "", "the spec must be a mapping of fields", "start from stacks/digits/model.yaml"
        )
    lines: dict[Loc, int] = {}
    _index_lines(node, (), lines)
    return SpecDocument(path=path.resolve(), data=data, lines=lines)


def _index_lines(node: yaml.Node | None, loc: Loc, lines: dict[Loc, int]) -> None:
    if node is None:
        return
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = loc + (str(key.value),)
            lines[child] = key.start_mark.line + 1
            _index_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, loc + (index,), lines)


def validate(doc: SpecDocument) -> ModelSpec:
    """Check the document against the spec models and the files it names; mutates nothing."""
    moved = moved_settings(doc.data, doc.where)
    try:
        spec = ModelSpec.model_validate(doc.data)
    except ValidationError as exc:
        # A deploy section in the old layout is told how to move; what else pydantic says of it would
        # only follow from the move not being made yet.
        problems = [_problem(doc, err) for err in exc.errors() if not (moved and err["loc"][0] == "deploy")]
        raise UserError(moved + problems) from None
    if moved:
        raise UserError(moved)
    problems = _file_problems(doc, spec)
    if problems:
        raise UserError(problems)
    return spec


def resolve(doc: SpecDocument, spec: ModelSpec) -> ResolvedSpec:
    """Fill in what builders need: absolute paths next to the spec file."""
    base = doc.path.parent
    return ResolvedSpec(
        spec_file=str(doc.path),
        spec=spec,
        model_path=str((base / spec.model.path).resolve()),
        calibration_path=str((base / spec.data.calibration).resolve()),
        evaluation_path=str((base / spec.data.evaluation).resolve()),
        fine_tuning_path=None
        if spec.optimize.fine_tuning_data is None
        else str((base / spec.optimize.fine_tuning_data).resolve()),
        locations=doc.locations,
        model_format=_format(base, spec),
    )


def load_resolved(path: str | Path) -> ResolvedSpec:
    doc = load(path)
    return resolve(doc, validate(doc))


def _file_problems(doc: SpecDocument, spec: ModelSpec) -> list[Problem]:
    base = doc.path.parent
    problems: list[Problem] = []
    model = base / spec.model.path
    if not (model.is_file() or (model / "saved_model.pb").is_file() or (model / "config.json").is_file()):
        problems.append(
            Problem(
                doc.where(("model", "path")),
                "model.path",
                f"{spec.model.path!r} does not exist (relative to {doc.path.name})",
                "train or copy the model there, or fix the path",
            )
        )
    for field in ("calibration", "evaluation"):
        value = getattr(spec.data, field)
        if not (base / value).is_file():
            problems.append(
                Problem(
                    doc.where(("data", field)),
                    f"data.{field}",
                    f"{value!r} does not exist (relative to {doc.path.name})",
                    "create the .npz file or fix the path",
                )
            )
    return problems + _family_problems(doc, spec, _format(base, spec)) + _section_problems(doc, spec)


def _section_problems(doc: SpecDocument, spec: ModelSpec) -> list[Problem]:
    """Settings of one section that another section's settings rule out."""
    if (
        isinstance(spec.deploy, DockerDeploy)
        and spec.deploy.grpc_host_port is not None
        and spec.serving.grpc_port is None
    ):
        return [
            Problem(
                doc.where(("deploy", "grpc_host_port")),
                "deploy.grpc_host_port",
                "publishes the gRPC service, but serving.grpc_port is null (off)",
                "set serving.grpc_port (e.g. 8001) or remove deploy.grpc_host_port",
            )
        ]
    return []


def _format(base: Path, spec: ModelSpec) -> ModelFormat:
    folder = base / spec.model.path
    return spec.model.resolved_format((folder / "config.json").is_file(), (folder / "model.bin").is_file())


def _family_problems(doc: SpecDocument, spec: ModelSpec, fmt: ModelFormat) -> list[Problem]:
    """What only the family of the model's format (written or inferred from its files) decides:
    its data files, task and metric (``Family.spec_problems``), located in the file."""
    from modelprep.families import family_of_format

    found = family_of_format(fmt.value).spec_problems(spec, doc.path.parent, lambda loc: loc in doc.lines)
    return [Problem(doc.where(p.loc), ".".join(map(str, p.loc)), p.problem, p.fix) for p in found]


def _problem(doc: SpecDocument, err: Any) -> Problem:
    loc, target = untagged(tuple(err["loc"]))
    kind: str = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        problem, fix = "is required", "add it (see `modelstack schema`)"
    elif kind == "deploy_target":
        loc, problem, fix = unknown_target(value)
    elif (
        kind == "extra_forbidden"
        and target is not None
        and len(loc) == 2
        and (foreign := foreign_setting(str(loc[1]), target))
    ):
        problem, fix = foreign
    elif kind == "extra_forbidden":
        problem, fix = (
            "is not a known field",
            f"remove it or fix its spelling; known fields: {_known_fields(loc, target)}",
        )
    elif kind == "enum":
        problem, fix = f"{_show(value)} is not supported", f"use one of {_choices(ctx.get('expected', ''))}"
    elif kind == "literal_error":
        problem, fix = f"{_show(value)} is not supported", f"use one of {_choices(ctx.get('expected', ''))}"
    elif kind == "value_error":
        problem, _, fix = str(ctx.get("error", err["msg"])).partition("; ")
        fix = fix or "see `modelstack schema`"
    elif kind == "string_pattern_mismatch":
        problem, fix = f"{_show(value)} is not valid", _pattern_fix(loc)
    elif kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        problem, fix = (
            f"{_show(value)} is out of range",
            f"use a value that is {err['msg'].lower().removeprefix('input should be ')}",
        )
    elif kind in {"too_short", "too_long"}:
        problem, fix = err["msg"].lower(), "see `modelstack schema` for the allowed number of items"
    else:
        problem, fix = (
            f"{_show(value)} is not valid ({err['msg'].lower()})",
            "see `modelstack schema` for the expected type",
        )
    return Problem(doc.where(loc), ".".join(str(part) for part in loc), problem, fix)


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _choices(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")


_PATTERN_FIXES = {
    "name": "use lower case letters, digits and dashes, starting with a letter (at most 40)",
    "sha256": "use the 64 lower-case hex digits printed by `sha256sum`",
}


def _pattern_fix(loc: Loc) -> str:
    key = str(loc[-1])
    if key == "name" and len(loc) > 1:
        return "use letters, digits and underscores, starting with a letter or underscore"
    return _PATTERN_FIXES.get(key, "see `modelstack schema` for the allowed form")


def _known_fields(loc: Loc, deploy_target: str | None = None) -> str:
    from pydantic import BaseModel

    model: type[BaseModel] = ModelSpec
    if deploy_target is not None:  # inside deploy: the section of the target written
        model, loc = DEPLOY_SECTIONS[deploy_target], loc[1:]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            break
        model = candidates[0]
    return ", ".join(model.model_fields)

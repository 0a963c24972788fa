"""The one exception type users see: every problem names where it is and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, e.g. a field of model.yaml or a data file."""

    where: str  # "model.yaml:12" or a file path
    path: str  # dotted field path, "" when the problem is about the whole file
    problem: str
    fix: str

    def __str__(self) -> str:
        field = f" {self.path}:" if self.path else ""
        return f"{self.where}:{field} {self.problem}; {self.fix}"


class UserError(Exception):
    """Raised for anything the user can fix. The CLI prints it and exits 2, no traceback."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, where: str, path: str, problem: str, fix: str) -> UserError:
        return cls(Problem(where, path, problem, fix))

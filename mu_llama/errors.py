"""Project exceptions. Every error a user can cause carries a one-line message naming the thing and the reason.

They live in mu_llama/ but import nothing from it, so encoders/ and adapters/ may raise them too
(the one allowed upward import: a leaf module with no dependencies).
"""

from __future__ import annotations

from pathlib import Path


class MuLlamaError(Exception):
    """Base class for every error this toolkit raises on purpose."""


class AudioError(MuLlamaError):
    """A file could not be turned into audio. `reason` is a short machine-friendly tag, `detail` the human part."""

    # Reasons a caller (e.g. the batch labeler) may branch on or tabulate.
    REASONS = ("missing", "not_a_file", "permission", "empty", "not_audio", "corrupt",
               "unsupported_format", "too_long", "zero_length", "decode_failed")

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        if reason not in self.REASONS:
            raise ValueError(f"unknown AudioError reason {reason!r}; valid: {', '.join(self.REASONS)}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason.replace('_', ' ')}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ConfigError(MuLlamaError, ValueError):
    """An option or config value is invalid. The message names the valid choices."""


class CheckpointError(MuLlamaError):
    """A checkpoint is missing, malformed, or does not match the model (missing/unexpected keys, shapes)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DependencyError(MuLlamaError, RuntimeError):
    """An installed library is not shaped the way mu-llama reaches into it (a private name moved, a module returns
    another type, a bundled data file changed). Raised where mu-llama reaches into that library, instead of a wrong
    result. The message names the package, its installed version, what was expected and the supported range."""

    def __init__(self, package: str, supported: str, problem: str):
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "(not installed)"
        self.package, self.installed, self.supported = package, installed, supported
        super().__init__(f"{package} {installed}: {problem}; mu-llama supports {package}{supported}")


def choice_error(name: str, value: object, choices) -> ConfigError:
    """Build the standard 'bad option' error: names the option, the value and every valid choice."""
    return ConfigError(f"invalid {name} {value!r}; valid choices: {', '.join(map(str, choices))}")

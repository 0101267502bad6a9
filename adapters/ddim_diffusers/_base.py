"""A small stand-in for diffusers' ConfigMixin / SchedulerMixin / BaseOutput, used when diffusers
is not installed (the mindone / MindSpore situation: the diffusers API on another framework).

Only what the schedulers need: constructor arguments recorded as `config`, `from_config`,
`save_pretrained` / `from_pretrained` through `scheduler_config.json` in a local directory
(plain JSON: nothing from disk is ever executed), and outputs indexable like tuples.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from ddim_core.config import load_json_object

SCHEDULER_CONFIG_NAME = "scheduler_config.json"
C = TypeVar("C", bound="ConfigMixin")


class FrozenConfig(dict[str, Any]):
    """A read-only dict whose keys are also attributes (`scheduler.config.num_train_timesteps`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no option {name!r}") from None

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a scheduler config is read-only; build a new scheduler instead")

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _readonly

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild a dict item by item, which a read-only one refuses: build it
        # whole instead, with the attributes written since (`config.prediction_type = ...`)
        return (type(self), (dict(self),), self.__dict__ or None)


def register_to_config(init: Callable[..., None]) -> Callable[..., None]:
    """Record every constructor argument (defaults included) as the instance's config."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: ConfigMixin, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # bind's message names no class: call init for Python's, which does
            init(self, *args, **kwargs)  # (the same signature: it fails before its body runs)
            raise
        bound.apply_defaults()
        options = {k: v for k, v in bound.arguments.items() if k != "self"}
        options.pop("kwargs", None)
        ignore = set(getattr(self, "ignore_for_config", ()))
        self._config = FrozenConfig()
        self.register_to_config(**{k: v for k, v in options.items() if k not in ignore})
        init(self, *args, **kwargs)

    return wrapped


class ConfigMixin:
    config_name = SCHEDULER_CONFIG_NAME
    _config: FrozenConfig

    @property
    def config(self) -> FrozenConfig:
        return self._config

    def register_to_config(self, **options: Any) -> None:
        """Add options to the config (as diffusers' ConfigMixin does)."""
        self._config = FrozenConfig({**self._config, **options})

    @classmethod
    def from_config(cls: type[C], config: Mapping[str, Any] | None = None, **kwargs: Any) -> C:
        """Build from a config mapping; keys the constructor does not take are ignored."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        params = inspect.signature(cls.__init__).parameters
        merged = {**dict(config or {}), **kwargs}
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        used = {
            k: v for k, v in merged.items() if not k.startswith("_") and (k in params or takes_any)
        }
        instance = cls(**used)
        if return_unused:
            return instance, {k: v for k, v in kwargs.items() if k not in used}  # type: ignore[return-value]
        return instance

    @classmethod
    def load_config(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        folder = os.path.join(os.fspath(pretrained_model_name_or_path), subfolder or "")
        path = os.path.join(folder, cls.config_name)
        if not os.path.isfile(path):
            raise OSError(
                f"no {cls.config_name} in {folder!r}; without diffusers installed only local "
                "directories can be loaded"
            )
        with open(path, "rb") as f:
            return load_json_object(f.read(), path)

    def save_config(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
        os.makedirs(save_directory, exist_ok=True)
        data = {"_class_name": type(self).__name__, **_jsonable(dict(self.config))}
        path = os.path.join(os.fspath(save_directory), self.config_name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")


class SchedulerMixin:
    config_name = SCHEDULER_CONFIG_NAME
    _compatibles: list[str] = []  # noqa: RUF012 (diffusers' class attribute)
    has_compatibles = True

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> Any:
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder)  # type: ignore[attr-defined]
        return cls.from_config(config, **kwargs)  # type: ignore[attr-defined]

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
        self.save_config(save_directory)  # type: ignore[attr-defined]

    @property
    def compatibles(self) -> list[type]:
        return [type(self)]


class DDIMSchedulerBase(SchedulerMixin, ConfigMixin):
    """Where diffusers' DDIMScheduler stands among ddim_diffusers.DDIMScheduler's bases when
    diffusers is not installed: the two mixins, nothing of its own."""


class DDIMInverseSchedulerBase(SchedulerMixin, ConfigMixin):
    """Where diffusers' DDIMInverseScheduler stands among ddim_diffusers.DDIMInverseScheduler's
    bases when diffusers is not installed: the two mixins, nothing of its own."""


class BaseOutput:
    """A dataclass output that also indexes like a tuple (`out[0]`) and by name (`out["x"]`)."""

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.to_tuple())

    def to_tuple(self) -> tuple[Any, ...]:
        values = (getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return tuple(v for v in values if v is not None)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in data.items()}

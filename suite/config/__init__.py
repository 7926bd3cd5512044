"""The one typed run configuration of the suite, split by job:

- ``schema``: the sections and :class:`TrainConfig` (every default, once; cross-field rules).
- ``identity``: the run id and the identity of the files a config names.
- ``overrides``: YAML files plus ``key.sub=value`` overrides -> a validated config.
- ``strict``: what every schema of the suite shares (strict models, :class:`ConfigError`,
  messages naming the dotted field); sweep and study files use it too.
- ``stored``: ``config.json`` as a record (the config plus what the run is).

A run is described by a :class:`TrainConfig`, loaded with :func:`load_config`, validated before
any work starts, and saved resolved (``config.json``) with the run. The public names are
re-exported here: ``from suite.config import load_config, run_id, TrainConfig``.

Imports: nothing of the suite but ``suite.run.names`` (file names), so every layer may use it.
"""

from suite.config.identity import (
    ID_VERSION,
    MAPS_STEP_PATTERN,
    OUTPUT_ONLY_FIELDS,
    RUN_ID_PATTERN,
    file_sha256,
    maps_identity,
    run_id,
    teacher_identity,
    teacher_run_folder,
)
from suite.config.overrides import apply_overrides, load_config, read_yaml, validate_config
from suite.config.schema import (
    MAPS_PREFIX,
    DataConfig,
    EvalConfig,
    MixConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
    TeacherConfig,
    TrackingConfig,
    TrainConfig,
)
from suite.config.stored import RECORD_KEYS, stored_config
from suite.config.strict import ConfigError, Strict, describe_keys, format_validation_error

__all__ = [
    "ID_VERSION",
    "MAPS_PREFIX",
    "MAPS_STEP_PATTERN",
    "OUTPUT_ONLY_FIELDS",
    "RECORD_KEYS",
    "RUN_ID_PATTERN",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MixConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "Strict",
    "TeacherConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "describe_keys",
    "file_sha256",
    "format_validation_error",
    "load_config",
    "maps_identity",
    "read_yaml",
    "run_id",
    "stored_config",
    "teacher_identity",
    "teacher_run_folder",
    "validate_config",
]

"""State shared by the CLI commands: the settings, loaded once on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from clothes_search.settings import ConfigError, Settings


@dataclass
class CliContext:
    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.load(self.config_file)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings


pass_cli = click.make_pass_decorator(CliContext)

"""The serving side of the champion program: follow the registry's pointer without a restart.

The registry itself (versions, manifests, promotion) is offline learning and lives in
``delegation.learning.registry``; the decider only needs the three reads of
``ChampionRegistry``, so this module does not import it.
"""

from __future__ import annotations

import threading
from typing import Protocol

from loguru import logger

from delegation.deciders.dspy_decider import LoadedProgram, load_program
from delegation.deciders.errors import ProgramLoadError


class ChampionRegistry(Protocol):
    """What serving reads from the artifact registry; ``champion`` and ``load`` raise ``ProgramLoadError``."""

    def pointer_stamp(self) -> object: ...

    def champion(self) -> int | None: ...

    def load(self, version: int) -> LoadedProgram: ...

    def earlier_champions(self) -> list[int]: ...


class ChampionProgram:
    """Serves the champion and follows the pointer without a restart; a bad artifact never replaces a good one."""

    def __init__(self, registry: ChampionRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._stamp: object = ("never",)  # differs from any pointer stamp, including None (no file)
        self._loaded = load_program(None)
        self._serving: int | None = None
        self.refresh()

    def refresh(self) -> LoadedProgram:
        """Reload when the pointer changed; on any failure log it and keep serving the last good program.

        Only the pointer file can change the champion at run time (shipped versions change with
        the code), so one ``stat`` per decision is the whole cost when nothing changed.
        """
        stamp = self.registry.pointer_stamp()
        if stamp == self._stamp:
            return self._loaded
        with self._lock:
            if stamp == self._stamp:
                return self._loaded
            self._stamp = stamp
            try:
                version = self.registry.champion()
            except ProgramLoadError as err:
                logger.error("artifact registry unreadable, still serving {}: {}", self._loaded.version, err)
                return self._loaded
            if version is None or version == self._serving:
                return self._loaded
            try:
                loaded = self.registry.load(version)
            except ProgramLoadError as err:
                if self._serving is not None:
                    logger.error(
                        "refusing artifact version {}: {}; still serving {}", version, err, self._loaded.version
                    )
                    return self._loaded
                # Nothing good loaded yet (a start): the last good version, not the unoptimized module.
                logger.error("refusing artifact version {}: {}", version, err)
                return self._serve_last_good(version)
            logger.info("now serving DSPy program {} (was {})", loaded.version, self._loaded.version)
            self._loaded, self._serving = loaded, version
            return loaded

    def _serve_last_good(self, refused: int) -> LoadedProgram:
        try:
            candidates = self.registry.earlier_champions()
        except ProgramLoadError as err:
            logger.error("artifact registry unreadable, serving {}: {}", self._loaded.version, err)
            return self._loaded
        for version in candidates:
            try:
                loaded = self.registry.load(version)
            except ProgramLoadError as err:
                logger.error("refusing artifact version {} too: {}", version, err)
                continue
            logger.warning("champion {} refused: serving the last good version {}", refused, loaded.version)
            self._loaded, self._serving = loaded, version
            return loaded
        logger.error("no earlier version can be served either: serving {}", self._loaded.version)
        return self._loaded

    @property
    def current(self) -> LoadedProgram:
        """The program to answer the next decision with."""
        return self.refresh()

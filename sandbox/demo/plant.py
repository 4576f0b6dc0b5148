"""Acme's plant for `veil demo`: a simulated MES database and a simulated machine tool.

- :class:`SimulatedMes`: the MES's production table in an SQLite file (a vendor's column
  names and units: ``TEMP_F`` in °F, ``CYCLE_MS`` in milliseconds), with an id that only
  grows; :meth:`SimulatedMes.record` adds work orders as the MES would during a shift.
- :class:`SimulatedMachine`: a real ``asyncua`` OPC UA server on a free loopback port, in a
  thread of its own, with a machine tool's variables (spindle temperature and speed, part
  count, running flag); :meth:`SimulatedMachine.run` changes them every few tenths of a
  second until :meth:`SimulatedMachine.halt`.  A reader logs in (``READER``), as a plant's
  machines ask of anyone reading them.

Both are seeded, so every demo run writes the same values; neither needs a system package.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import sqlite3
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from keys.bao import free_port
from sandbox.demo.data import MACHINES, SHIFTS

#: The MES vendor's table and its columns (their names, their units).
MES_TABLE = "PRODUCTION_LOG"
MES_COLUMNS = ("LOG_ID", "EQUIP_CODE", "SHIFT_CD", "TEMP_F", "CYCLE_MS", "QTY_GOOD", "QTY_SCRAP")

#: The machine's variables: browse name -> (variant type, first value).
VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "Spindle.Temp": (ua.VariantType.Double, 31.0),
    "Spindle.Speed": (ua.VariantType.Int32, 2400),
    "Parts.Count": (ua.VariantType.UInt32, 0),
    "Running": (ua.VariantType.Boolean, True),
}
#: The login the machine gives its readers (a user of the machine's own, demo only).
READER = ("veil-reader", "lathe-01-demo-password")


class SimulatedMes:
    """An MES's production log in the SQLite file ``path`` (made anew)."""

    def __init__(self, path: Path, seed: int = 25) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._rng = random.Random(seed)  # noqa: S311 - synthetic sample data
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute(
                f"CREATE TABLE {MES_TABLE} (LOG_ID INTEGER PRIMARY KEY, EQUIP_CODE TEXT, "
                "SHIFT_CD TEXT, TEMP_F REAL, CYCLE_MS INTEGER, QTY_GOOD INTEGER, "
                "QTY_SCRAP INTEGER)"
            )

    def record(self, count: int) -> int:
        """``count`` more work orders, as the MES writes them; the last LOG_ID."""
        rows = []
        for _ in range(count):
            self.rows += 1
            machine = self._rng.choice(MACHINES)
            hot = machine.startswith("press")
            celsius = min(118.0, max(22.0, self._rng.gauss(76.0 if hot else 58.0, 6.0)))
            cycle_s = min(88.0, max(12.0, self._rng.gauss(42.0 if "lathe" in machine else 35, 4)))
            scrap = min(50, int(self._rng.expovariate(1 / (0.5 + max(0.0, celsius - 70) * 0.1))))
            rows.append((
                self.rows, machine, self._rng.choices(SHIFTS, weights=(5, 4, 2))[0],
                round(celsius * 9 / 5 + 32, 1), round(cycle_s * 1000),
                self._rng.randint(40, 120), scrap,
            ))  # fmt: skip
        with contextlib.closing(sqlite3.connect(self.path)) as db, db:
            insert = f"INSERT INTO {MES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - ours
            db.executemany(insert, rows)
        return self.rows


class _Readers(UserManager):
    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if (username, password) == READER:
            return User(role=UserRole.User, name=username)
        return None


class SimulatedMachine:
    """A machine tool's OPC UA server (``VARIABLES``) on ``endpoint``; :meth:`close` it."""

    def __init__(self, seed: int = 25) -> None:
        # asyncua warns that a password may cross in clear: on this loopback demo, it may.
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        self.endpoint = f"opc.tcp://127.0.0.1:{free_port()}/acme/lathe-01/"
        self.namespace = 0
        self.changes = 0
        self._rng = random.Random(seed)  # noqa: S311 - synthetic sample data
        self._nodes: dict[str, Any] = {}
        self._values = {name: value for name, (_, value) in VARIABLES.items()}
        self._server: Server | None = None
        self._halted = threading.Event()
        self._ticker: threading.Thread | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="demo-opcua-machine", daemon=True
        )
        self._thread.start()
        self._started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)

    def ready(self, timeout: float = 120) -> SimulatedMachine:
        """Wait until the server answers (it starts in the background)."""
        self._started.result(timeout)
        return self

    def node_id(self, name: str) -> str:
        """A variable's node id, as a declaration writes it."""
        return f"ns={self.namespace};s={name}"

    def set(self, name: str, value: Any) -> dt.datetime:
        """Write a variable now (one change); its source timestamp, UTC."""
        written: dt.datetime = self._call(self._write(name, value))
        return written

    def run(self, every_s: float = 0.25) -> None:
        """Machine parts: every ``every_s`` the spindle warms, its speed varies and one more
        part is counted (three changes); until :meth:`halt`."""
        self.ready()
        self._halted.clear()
        self._ticker = threading.Thread(
            target=self._tick_until_halted, args=(every_s,), name="demo-machine-ticker",
            daemon=True,
        )  # fmt: skip
        self._ticker.start()

    def halt(self) -> dt.datetime:
        """Stop machining: the ticks end and the running flag goes false; when, UTC."""
        self._stop_ticking()
        return self.set("Running", False)

    def close(self) -> None:
        self._stop_ticking()
        with contextlib.suppress(Exception):  # it never started, or stopped already
            self._started.result(120)
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SimulatedMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop_ticking(self) -> None:
        self._halted.set()
        if self._ticker is not None:
            self._ticker.join(10)
            self._ticker = None

    def _tick_until_halted(self, every_s: float) -> None:
        while not self._halted.wait(every_s):
            temp = float(self._values["Spindle.Temp"])
            warmer = temp + self._rng.uniform(0.02, 0.2) if temp < 62 else temp - 3.0
            self.set("Spindle.Temp", round(warmer, 2))
            speed = int(self._values["Spindle.Speed"])
            self.set("Spindle.Speed", speed + self._rng.choice((-25, -10, 10, 25)))
            self.set("Parts.Count", int(self._values["Parts.Count"]) + 1)

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    async def _start(self) -> None:
        server = Server(user_manager=_Readers())
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Acme lathe-01 (simulated)")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_security_IDs(["Username"])
        self.namespace = await server.register_namespace("urn:veil:demo:acme:lathe-01")
        machine = await server.nodes.objects.add_object(self.namespace, "Lathe01")
        for name, (variant, value) in VARIABLES.items():
            self._nodes[name] = await machine.add_variable(
                ua.NodeId(ua.String(name), ua.Int16(self.namespace)),
                name,
                ua.Variant(value, variant),
            )
        await server.start()
        self._server = server

    async def _write(self, name: str, value: Any) -> dt.datetime:
        now = ua.DateTime.now(dt.UTC)
        variant = ua.Variant(value, VARIABLES[name][0])
        await self._nodes[name].write_value(
            ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
        )
        self._values[name] = value
        self.changes += 1
        return now

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        # The server's sessions and subscriptions keep tasks that its stop leaves behind.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Users' passwords: argon2id (argon2-cffi), hashed and verified off the event loop.

A hash is argon2's encoded form (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``): it carries its own
parameters, so raising the cost in the settings re-hashes each password at its owner's next login.
An unknown user name is checked against a dummy hash of the same cost, so the answer's timing does not
tell which names exist.

At most :data:`MAX_CONCURRENT` hashes run at once: each holds argon2's memory (``argon2_memory_kib``, 64 MiB by
default), and the default thread pool would run up to the CPU count + 4 of them together (six logins measured
409 MiB); further logins wait their turn.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway_core.settings import AuthSettings

MAX_CONCURRENT = 2  #: argon2 computations at once (each holds its memory cost)


class Passwords:
    def __init__(self, settings: AuthSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._dummy: str | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, encoded: str | None, password: str) -> bool:
        """Whether ``password`` matches ``encoded`` (None: no such user; checked against a dummy all the same)."""
        if encoded is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            encoded = self._dummy
            password = ""  # never matches the dummy's random password
        try:
            async with self._slots:
                return await asyncio.to_thread(self._hasher.verify, encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return True

"""Stable pseudonyms for patient and exam ids, so datasets can be shared.

A key file (JSON, created on first use with a random 256-bit secret, mode 0600)
holds the secret and the mapping pseudonym -> original id. Pseudonyms are keyed
hashes: ``P-`` + the first 12 hex digits of HMAC-SHA256(secret, "patient:" + id)
and ``E-`` + those of HMAC-SHA256(secret, "exam:" + patient id + "/" + exam id),
so the same key gives the same pseudonyms in every run and on every machine, and
without the key they cannot be reversed or recomputed from a guessed name. The
mapping is written only to the key file, which must lie outside the output folder.

Parallel workers (a batch run's keyframes stage) share one key file: creating it and
merging a mapping into it happen under an exclusive ``flock`` on ``KEYFILE.lock``, so
two workers can neither make two secrets nor drop each other's mappings.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from ceuspipe.errors import InputError, OutputError

__all__ = ["Pseudonymizer", "PSEUDONYM_RE", "check_keyfile_outside"]

KEY_FORMAT = "ceuspipe.pseudonym-key/1"
PSEUDONYM_RE = re.compile(r"[PE]-[0-9a-f]{12}")


def check_keyfile_outside(keyfile: str | os.PathLike, *outputs: str | os.PathLike) -> None:
    """Raise :class:`OutputError` when ``keyfile`` lies inside (or is) an output folder."""
    key = Path(keyfile).resolve()
    for out in outputs:
        o = Path(out).resolve()
        if key == o or o in key.parents:
            raise OutputError(keyfile, f"pseudonym key file must lie outside the output folder {o} "
                                       "(it holds the mapping back to patient ids)")


def _key_lock(keyfile: Path):
    """The exclusive lock on ``KEYFILE.lock`` (0600, beside the key) that guards the key."""
    from ceuspipe.fsutil import exclusive_lock

    return exclusive_lock(keyfile.with_name(keyfile.name + ".lock"), 0o600)


class Pseudonymizer:
    """Maps ids to pseudonyms with the secret of ``keyfile`` (created when missing).

    :meth:`patient` and :meth:`exam` return pseudonyms and remember the originals;
    :meth:`save` merges that mapping into the key file (atomically). Ids that already
    are pseudonyms of this key are kept as they are.
    """

    def __init__(self, keyfile: str | os.PathLike):
        self.path = Path(keyfile)
        with _key_lock(self.path):
            if self.path.exists():
                d = self._read()
                self._secret = bytes.fromhex(d["secret"])
                self.patients: dict[str, str] = dict(d.get("patients", {}))
                self.exams: dict[str, list[str]] = dict(d.get("exams", {}))
            else:
                self._secret = secrets.token_bytes(32)
                self.patients, self.exams = {}, {}
                self._write()

    def _read(self) -> dict:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            if d.get("format") != KEY_FORMAT:
                raise ValueError(f"format is not {KEY_FORMAT}")
            bytes.fromhex(d["secret"])
            return d
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(self.path, f"not a ceuspipe pseudonym key file ({exc})") from None

    def _hash(self, text: str) -> str:
        return hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).hexdigest()[:12]

    def patient(self, patient_id: str) -> str:
        if patient_id in self.patients:  # already a pseudonym of this key
            return patient_id
        p = "P-" + self._hash("patient:" + patient_id)
        self.patients[p] = patient_id
        return p

    def exam(self, patient_id: str, exam_id: str) -> str:
        if exam_id in self.exams:
            return exam_id
        e = "E-" + self._hash(f"exam:{patient_id}/{exam_id}")
        self.exams[e] = [patient_id, exam_id]
        return e

    def save(self) -> None:
        """Merge the mapping into the key file (under its lock) and write it atomically."""
        with _key_lock(self.path):
            if self.path.exists():
                old = self._read()
                if bytes.fromhex(old["secret"]) != self._secret:
                    raise OutputError(self.path, "pseudonym key file was replaced by one with another "
                                                 "secret while in use; nothing saved")
                self.patients = {**old.get("patients", {}), **self.patients}
                self.exams = {**old.get("exams", {}), **self.exams}
            self._write()

    def _write(self) -> None:
        from ceuspipe.fsutil import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": KEY_FORMAT, "secret": self._secret.hex(), "patients": self.patients,
                           "exams": self.exams}, indent=2, ensure_ascii=False) + "\n"
        atomic_write_text(self.path, text, private=True)  # 0600 from the first byte

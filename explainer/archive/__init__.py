"""The tamper-evident explanation archive: hash chain, crypto-shredding, signed audit bundles.

    archive = open_archive("sqlite:///home/archive.db", Secrets.load_or_create(home))
    [record] = archive.append([ArchiveEntry(payload=explanation, customer_id="C-1001", ...)])
    archive.verify().ok
    with open("audit.zip", "wb") as out:
        archive.export_bundle(out, model="churn")
    verify_bundle("audit.zip").ok        # offline: nothing but the zip

Errors (``explainer.exceptions``): ValidationError (bad input), NotFound (unknown record or
case), Conflict (id taken, case already open or decided), IntegrityError (a record failed its
checks, or other secrets), Unavailable (the database cannot be read or written).
"""

from __future__ import annotations

from ._archive import Archive, open_archive
from ._bundle import verify_bundle
from ._secrets import Secrets
from ._types import ArchiveEntry, ArchiveStats, BadRecord, Record, VerifyReport

__all__ = [
    "Archive",
    "ArchiveEntry",
    "ArchiveStats",
    "BadRecord",
    "Record",
    "Secrets",
    "VerifyReport",
    "open_archive",
    "verify_bundle",
]

"""Privacy: what is kept about people, and under which name.

- :mod:`avrec.privacy.pseudonyms`: user ids replaced by a keyed HMAC at every door (ingest,
  the HTTP API, the CLI), so the store never holds the platform's own ids.

Retention (``[privacy] retention_days``) lives in the stores (``Store.apply_retention``),
consent and the right of access in the stores and the service (``Store.set_consent``,
``Store.export_user``).
"""

from avrec.privacy.pseudonyms import Pseudonyms

__all__ = ["Pseudonyms"]

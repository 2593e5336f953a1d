"""``python -m typed_session_sql.cli``: the same as the ``typed-session-sql`` command."""

import sys

from typed_session_sql.cli import main

sys.exit(main())

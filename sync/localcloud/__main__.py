"""``python -m sync.localcloud serve --home DIR``: run the local stack in the foreground."""

from sync.localcloud.service import main

raise SystemExit(main())

from sysmail_ops.cli import main

raise SystemExit(main())

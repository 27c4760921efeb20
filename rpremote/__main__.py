from rpremote.cli import main

raise SystemExit(main())

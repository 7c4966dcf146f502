from simviewer.cli import main

raise SystemExit(main())

"""A worker whose import fails, like a bad image: the emulator must back off and say so."""
raise SystemExit("crash_on_start: simulated broken worker image")

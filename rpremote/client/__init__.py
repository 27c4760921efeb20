"""Speaks HTTP: the queue API, finding or starting the local emulator, choosing a target.

Imported lazily (on the first remote call) so ``import rpremote`` stays light.
"""

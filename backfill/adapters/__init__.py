"""One adapter per external system, each owning its library and raising only `backfill.core.errors`."""

"""Ground floor: settings, config files, paths and process helpers. Imports nothing else of gridwatch."""

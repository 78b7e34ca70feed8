//! Test fixtures: objects from YAML.

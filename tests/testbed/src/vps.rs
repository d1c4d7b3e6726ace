//! A Debian VPS booted with systemd-nspawn (being written).

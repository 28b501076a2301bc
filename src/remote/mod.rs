//! Running commands and copying files on hosts over SSH.

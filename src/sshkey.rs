//! SSH public keys: strict parsing and SHA256 fingerprints as `ssh-keygen -l` prints them.
//! (Helper-owned.)

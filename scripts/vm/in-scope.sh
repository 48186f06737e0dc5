#!/bin/sh
# In the guest: runs "$@" in its own systemd scope with Delegate=yes (gearshift may enable
# cgroup controllers below it and move its processes into a leaf). It keeps the caller's
# SELinux context, root's ssh login range s0-s0:c0.c1023: gearshift relays the stdio a gear at
# s0:cX,cY may not use (src/gear/relay.rs), so the tests run the way an admin would.
exec systemd-run --scope --quiet -p Delegate=yes -- "$@"

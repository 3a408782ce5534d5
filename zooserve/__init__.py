"""The `zooserve` command: the front door to training (training/) and serving (service/)."""

"""Generated from proto/ by proto/generate.py; do not edit.

The modules register their descriptors in POOL, zooserve's own descriptor pool, not in
protobuf's default one, where tritonclient registers the same files: so both can be
imported in one process."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()

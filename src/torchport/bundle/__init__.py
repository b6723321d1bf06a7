"""The bundle format (manifest, golden tensors, safe reading) and its writer."""

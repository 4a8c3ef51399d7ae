"""Folder discovery (:mod:`.layouts`), subject splits (:mod:`.splits`), data modules
(:mod:`.modules`: PairedVolumes, Volumes) and the procedural phantoms (:mod:`.phantoms`)."""

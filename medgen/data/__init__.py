"""Folder discovery (:mod:`.layouts`), subject splits (:mod:`.splits`), data modules -- one per
layout of DESIGN.md section 2, on the volume pipeline of :mod:`.volume_module`: :mod:`.paired`
(PairedVolumes), :mod:`.volumes` (Volumes), :mod:`.unpaired`
(UnpairedVolumes), :mod:`.domain` (DomainVolumes), :mod:`.expression` (ExpressionTable) -- and the
procedural phantoms (:mod:`.phantoms`)."""

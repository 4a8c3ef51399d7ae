"""Folder discovery (:mod:`.layouts`), subject splits (:mod:`.splits`), data modules -- one per
layout of DESIGN.md section 2: :mod:`.modules` (PairedVolumes, Volumes), :mod:`.unpaired`
(UnpairedVolumes), :mod:`.domain` (DomainVolumes), :mod:`.expression` (ExpressionTable) -- and the
procedural phantoms (:mod:`.phantoms`)."""

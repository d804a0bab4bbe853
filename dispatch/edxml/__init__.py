"""The national format for exchanging documents between agencies: edXML (QCVN 102:2016).

``xml`` holds the namespace, the length limits and the safe parser; ``package`` writes and reads
a document package and ``status`` a status message, as plain data; ``exchange`` connects them to
the database: a dispatch's packages out, status messages in.
"""

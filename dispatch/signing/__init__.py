"""Signing: the keys of the leaders and of the agency, and the PAdES signatures that make the
issued PDF the electronic original (Decree 30/2020, Appendix I).

A key is named by a reference: the path of a PKCS#12 file, or a ``pkcs11:`` URI (RFC 7512) for a
token or HSM. Only the reference is stored; the private key stays in its file or token, and the
password comes from the environment, never from the database or the logs.
"""

import warnings

# cryptography 51 deprecates DSA and warns when pyHanko imports its DSA support, on every command
# that signs or verifies; no key here is DSA, so the warning says nothing to the user.
warnings.filterwarnings("ignore", message="DSA is deprecated")

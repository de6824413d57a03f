"""Webhooks: which URLs may be called (address.py), how a delivery is signed
(signing.py) and sent (transport.py), a delivery's record and attempts
(delivery.py), and the process that delivers them (dispatcher.py)."""

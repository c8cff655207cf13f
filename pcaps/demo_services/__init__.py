"""Small real services used by ``pcaps/make_demo.py`` to record ``pcaps/demo.pcap``.

Every module here is a real Flask app (or a real UDP DNS responder) that the
demo script serves on its own 127.0.0.x loopback address while tcpdump records.
Nothing in here is imported by the sensor itself.
"""

"""Test doubles that ship with leptonctl (as Fabric and Invoke ship theirs).

``fake_agent.FakeCluster`` stands in for the hosts behind ``HostPool``: see
docs/testing.md, "Fakes: which exist and why".
"""

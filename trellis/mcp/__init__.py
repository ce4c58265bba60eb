"""A flow's sessions served over the Model Context Protocol (``trellis mcp``).

An agent walks a flow through four tools (start, answer, signal, get) and reads
the flow's graph and nodes as resources. The tools drive any SessionsPort — a
SessionManager in this process or a trellis server through the SDK — so an
agent sees the same durable steps every other caller sees.
"""

from twisted.application.service import ServiceMaker

relay = ServiceMaker("relay", "relay.tap", "Message relay daemon for AI agents (agent-relay protocol v1)", "relay")

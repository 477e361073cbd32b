from twisted.application.service import ServiceMaker

relayIngest = ServiceMaker("relay-ingest", "relay.ingest.tap", "Ingest service: stores sync batches from relay daemons in PostgreSQL", "relay-ingest")

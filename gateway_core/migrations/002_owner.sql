-- Who manages a device besides the REST API's users: NULL for devices made through the API or an import,
-- e.g. "nexus-operator:plant-a/press-1" for one a Kubernetes operator made from its custom resource
-- (docs/operator.md). Not part of the device document: gateways never see it, export does not carry it.
ALTER TABLE core.devices ADD COLUMN owner text;

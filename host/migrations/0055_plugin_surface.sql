-- What a validated component imports (the capabilities it may use) and exports, by name, as
-- JSON arrays: recorded at validation so a reviewer or co-signer reads them without a compile.
-- NULL until the version has been validated.
ALTER TABLE plugin_versions ADD COLUMN imports TEXT;
ALTER TABLE plugin_versions ADD COLUMN exports TEXT;

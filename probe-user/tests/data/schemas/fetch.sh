#!/bin/sh
# Re-fetches the schema data the ECS and OCSF tests check records against, from the
# package registries (the only network this project's machines have). Run it from
# this directory; it rewrites the two .json.gz files and prints their sha256.
set -eu
work=$(mktemp -d)
here=$(pwd)
cd "$work"
# ECS 9.4.0: Elastic's own npm package embeds ecs_flat.yml of the elastic/ecs release,
# parsed to JSON by its generator (same keys; comments lost).
npm pack @elastic/ecs@9.4.0
tar xzf elastic-ecs-9.4.0.tgz package/build/commonjs/ecs_flat.js package/LICENSE package/NOTICE.txt
node -e 'process.stdout.write(JSON.stringify(require("./package/build/commonjs/ecs_flat.js").EcsFlat,null,1))' > ecs_flat-9.4.0.json
# OCSF 1.8.0: the schema export of schema.ocsf.io (/export/v2/schema), as packaged on
# PyPI by ocsf-json-schema.
pip download --no-deps ocsf-json-schema==1.2.0 -d .
unzip -o -j ocsf_json_schema-1.2.0-py3-none-any.whl 'ocsf_json_schema/ocsf/1.8.0.json' 'ocsf_json_schema/ocsf/LICENSE.txt' 'ocsf_json_schema/ocsf/README.md' -d ocsf
sha256sum ecs_flat-9.4.0.json ocsf/1.8.0.json
gzip -9 -c ecs_flat-9.4.0.json > "$here/ecs_flat-9.4.0.json.gz"
gzip -9 -c ocsf/1.8.0.json > "$here/ocsf-1.8.0.json.gz"
cp package/LICENSE "$here/ECS-LICENSE"; cp package/NOTICE.txt "$here/ECS-NOTICE.txt"
cp ocsf/LICENSE.txt "$here/OCSF-LICENSE.txt"; cp ocsf/README.md "$here/OCSF-README.md"
rm -rf "$work"

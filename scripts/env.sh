# Source this to put the project's Node.js 24 and the workspace binaries first on PATH:
#   . scripts/env.sh
umbra_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
for d in "$umbra_root"/.toolchain/node_modules/node-linux-*/; do
  PATH=$d/bin:$PATH
done
export PATH=$umbra_root/node_modules/.bin:$PATH
unset umbra_root d

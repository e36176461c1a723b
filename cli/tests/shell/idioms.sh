# Twelve package.json script idioms, each as a script line would run them under `sh -c`.
# Run in an empty project folder with a src/ of its own; needs node on PATH.
mkdir -p src && printf 'x\ny\nx\n' > src/one.txt && echo two > src/two.txt && echo 'console.log("a.js ran")' > a.js
mkdir -p dist/old && rm -rf dist && mkdir -p dist && ls -a dist | wc -l
cp -r src out && ls out
echo $(node -p 1+1)
if [ -f src/one.txt ]; then echo "one.txt is there"; fi
cat src/one.txt | grep -c x
node a.js & wait
test -f src/two.txt && echo "test -f passed"
for f in src/*; do echo "file: $f"; done
seq 1 5 | head -2 | tail -1
find src -name '*.txt' | wc -l
echo abc | sed s/b/X/
NODE_ENV=test node -e 'console.log(process.env.NODE_ENV)'

# Here-documents (XCU 2.7.4) with and without expansion, <<-, and read (XCU read).
name=World
cat <<EOT
Hello, $name! $((1 + 2)) $(echo sub) \$escaped \\ backslash
EOT
cat <<'EOT'
Hello, $name! $((1 + 2)) $(echo sub) \$kept
EOT
cat <<"EOT"
double-quoted delimiter: $name
EOT
cat <<-EOT
	leading tabs are stripped
		all of them
	EOT
cat <<EOT | tr a-z A-Z
piped here-doc $name
EOT
cat <<A; cat <<B
first
A
second
B
read first rest <<EOT
alpha beta gamma
EOT
echo "first=$first rest=$rest"
IFS=: read a b c <<EOT
x:y:z:extra
EOT
echo "a=$a b=$b c=$c"
read -r raw <<'EOT'
back\slash kept
EOT
echo "raw=$raw"
read cooked <<'EOT'
back\slash removed
EOT
echo "cooked=$cooked"
printf 'l1\nl2\nlast-no-newline' | while read -r line; do echo "line: $line"; done
printf 'l1\nlast-no-newline' | { while read -r line; do :; done; echo "partial last line: $line"; }
read v </dev/null; echo "read at end of input: $? [$v]"
while read -r k v; do echo "$k => $v"; done <<EOT
key1 value one
key2 value two
EOT
f() { cat; }
f <<EOT
into a function
EOT

export type Matrix = number[][];

export function identity(n: number): Matrix {
  return Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
}

export function multiply(a: Matrix, b: Matrix): Matrix {
  if (a[0].length !== b.length) throw new Error(`cannot multiply ${a.length}x${a[0].length} by ${b.length}x${b[0].length}`);
  return a.map((row) => b[0].map((_, j) => row.reduce((sum, v, k) => sum + v * b[k][j], 0)));
}

export function transpose(m: Matrix): Matrix {
  return m[0].map((_, j) => m.map((row) => row[j]));
}
